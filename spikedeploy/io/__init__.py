"""Reading and writing files: which format a file is, the quantized graph file, atomic writes and
the checks on the paths a command reads and writes."""
