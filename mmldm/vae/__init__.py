"""Stage 0: the KL-VAE of frames and audio images.

* :mod:`mmldm.vae.kl_vae`: :class:`~mmldm.vae.kl_vae.KLVAE` (diffusers ``AutoencoderKL``
  with presets ``sd-v1``/``tiny``, chunked scaled encode/decode, diffusers-folder and
  original single-file loading);
* :mod:`mmldm.vae.losses`: LPIPS, PatchGAN discriminator, hinge/KL/adaptive-weight losses;
* :mod:`mmldm.vae.stage`: :class:`~mmldm.vae.stage.VAEStage` for ``mmldm train vae``,
  :func:`~mmldm.vae.stage.load_vae` and :func:`~mmldm.vae.stage.export_pretrained`.
"""
