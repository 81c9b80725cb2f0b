"""Pictures from maps: display images, colour maps and overlays, text, panels, filmstrips and grids.

Pure functions from tensors and arrays to RGB uint8 arrays; they know nothing of loggers or training.
"""
