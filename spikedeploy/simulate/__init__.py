"""Running a graph: the float reference, the dispatch to a target's backends, graphs with host
parts, inputs, and Run (what a simulation produced)."""
