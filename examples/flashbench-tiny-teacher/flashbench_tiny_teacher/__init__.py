"""A worked third-party flashbench plugin: the ``tiny-unet`` teacher.

Importing this package is cheap: torch and diffusers are imported when the teacher is built.
"""

__version__ = "0.1.0"
