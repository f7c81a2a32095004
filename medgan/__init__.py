"""medgan: a runnable edition of "GANs for Medical Image Synthesis: An Empirical Study".

Data flow (one direction): raw dataset -> ``medgan.data.prepare`` -> prepared set ->
``medgan.train.run_training`` -> run folder -> ``medgan.generate`` -> generated prepared set ->
``medgan.metrics`` / ``medgan.unet`` -> JSON results -> notebooks -> Jupyter Book.
"""

__version__ = "0.1.0"
