"""What Hydra's launch machinery calls back into: the multirun callbacks named in ``conf/config.yaml``."""
