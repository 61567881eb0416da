"""NARM: Neural Attentive Session-based Recommendation (Li et al., CIKM 2017) in TF/Keras."""
