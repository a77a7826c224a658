"""mmldm: MM-LDM, multi-modal latent diffusion for sounding video generation."""

__version__ = "0.1.0"
