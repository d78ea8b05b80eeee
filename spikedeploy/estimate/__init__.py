"""What a placed, simulated network costs: spike traffic, energy and latency per inference."""
