"""CMSF-style spiking image-text retrieval (T = 2) on emoji drawings and their names."""
