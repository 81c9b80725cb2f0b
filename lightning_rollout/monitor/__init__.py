"""The logging step shared by the framework callbacks, free of any training framework.

Batch → kept samples (`batch`, `keeper`) → the model's input (`inputs`) → the side pass and what the task
makes of it (`side_pass`, `tasks`) → pictures, captions and scalars (`step`) → sinks. A front end
(Lightning's `AttentionRolloutCallback`, the command line's `replay`) says when, on which model, and where
the pictures and numbers go.
"""
