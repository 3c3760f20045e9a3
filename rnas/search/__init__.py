"""The search itself, apart from the pipeline that runs it: the controller (encoder, predictor,
decoder) and its training on a pool (``controller``, ``embedding``), architecture pools
(``pool``), the rounds of a search on a supernet (``rounds``), the zero-cost signals and the
ranking that combines them with the supernet (``signals``, ``ranking``) and the re-ranking of the
best cells by short stand-alone trainings (``rerank``). The spaces and strategies it searches with
are ``rnas.spaces`` and ``rnas.strategies``."""
