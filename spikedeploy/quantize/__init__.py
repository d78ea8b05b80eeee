"""Float Graph -> QGraph for a target: layer mapping, scales and rounding, and the fidelity report."""
