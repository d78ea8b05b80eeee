"""A quantized graph file's JSON header, read and written back as-is, for tests that damage one field."""

import json

import numpy as np


def read_header(path):
    """(header dict, every array member including the header's) of a QGraph .npz file."""
    with np.load(path) as z:
        return json.loads(bytes(z["__header__"]).decode()), {k: z[k] for k in z.files}


def write_with_header(arrays, header, path):
    """The members `arrays` with `header` as the file's JSON header, at `path` (returned)."""
    arrays = dict(arrays)
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path
