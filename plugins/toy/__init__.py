"""The embedded default world, ``toy-digits``: coloured handwritten digits that ship with scikit-learn.

Everything a study needs on a fresh CPU machine with no model hub lives here: the data, a small
text-conditioned teacher built from the same diffusers/transformers classes as Stable Diffusion
(``UNet2DConditionModel`` + ``CLIPTextModel`` + a real ``CLIPTokenizer``), and the toy evaluators'
networks. The trained weights are committed under ``flashbench_plugins/weights/`` and are rebuilt with::

    python -m flashbench_plugins.toy.build --all

See :mod:`flashbench_plugins.toy.build` for the recipe of each network.
"""
