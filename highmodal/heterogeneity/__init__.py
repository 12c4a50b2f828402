"""Heterogeneity quantification (HighMMT §2.1, Appendix A): transfer matrices, low-rank completion,
clustering into parameter groups."""
