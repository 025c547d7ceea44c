"""Training: block-diffusion objective (:mod:`.objective`), loop (:mod:`.trainer`), DDP (:mod:`.ddp`)."""
