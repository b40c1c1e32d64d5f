"""The ``netslim`` command line (also ``python -m netslim``)."""
