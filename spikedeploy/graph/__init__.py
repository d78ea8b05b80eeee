"""The one graph in the middle: the IR (Graph, Node), the op specs, the quantized graph (QGraph) and
the structural rewrites every backend relies on (branch alignment)."""
