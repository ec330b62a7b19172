"""Head-score analyses (STUDY.md section 6): similarity, recall, Spearman, Table 2, figures."""
