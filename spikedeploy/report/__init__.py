"""The deployment report (JSON, terminal, HTML), task sections, and `compare` across chips."""
