"""Training studies: held-out curves and the plateau rule of CE/GFC training
(:mod:`.heldout`), and the DCGAN prior's quality (:mod:`.prior_quality`)."""
