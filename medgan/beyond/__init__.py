"""Beyond the paper: the GAN families and medical uses of the review literature, on medgan's own trainer.

One module per section of ``notebooks/08_beyond_the_paper.ipynb``. Each runs its experiment through the
same registries, ``medgan train`` (exact resume, divergence handling, run folder), generation and metrics;
the modules here only compose those steps at a profile's size and draw the section's figure. The networks
and losses themselves live where every GAN's do (``medgan.models``, ``medgan.losses``).
"""
