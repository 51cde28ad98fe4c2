"""Stage ``pretrain_scmbm``: self-supervised masked brain modelling (SC-MBM) of the fMRI encoder."""
