"""Validation at the edge: what each kind of file and input may hold, checked when it is read,
before anything else sees it. One module per kind of input; every violation is one line."""
