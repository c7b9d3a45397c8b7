"""anycode: any-code completion over LSP from a structural language model of code."""
__version__ = "0.1.0"
