"""Evaluation metrics: retrieval (Recall@k, MAP@R), clustering (NMI), embedding space (rho, pi)."""
