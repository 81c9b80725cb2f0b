"""The bottom layer: argument checks, model outputs, token geometry, hooks and mode switches, ranks.

Everything here depends on torch alone; every other layer may import it, it imports none of them.
"""
