"""The error of bad input to live work, in a module without torch: a steering target read from a
URL or a command line is checked (and refused) before, or without, any model being loaded."""

from analysis.errors import SAEscopeError


class LiveInputError(SAEscopeError, ValueError):
    """Input a live computation cannot take (empty prompt, unknown latent, ...), said in one line."""
