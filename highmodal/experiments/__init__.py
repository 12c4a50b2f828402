"""Studies: the real-suite comparison, ablations, heterogeneity and pretraining experiments, probes,
retrieval and the simple baselines they are judged against; each writes its report (markdown + JSON)."""
