"""clipnotes: the helper package of an executable book on the CLIP family of papers."""
__version__ = "0.1.0"
