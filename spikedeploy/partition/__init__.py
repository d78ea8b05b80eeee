"""Placement of a graph's chip neurons onto cores and chips: resource model, placer, lower bound."""
