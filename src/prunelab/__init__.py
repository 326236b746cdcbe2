"""prunelab: a laboratory for taking parts out of neural networks and understanding what happens.

Dimension letters used in every docstring and shape comment:

    N  samples            D  input features       C  classes (logits)
    H  units in a layer   M  masks                P  parameters
    L  layers             K  models trained together (seeds, ensembles)

A *hidden node* is one output unit of a hidden ``Linear`` (after its activation). Hidden nodes
are numbered layer by layer; a node mask over the whole network is a tensor ``[M, H]`` with
``H`` the total hidden width, multiplied in after the activation.
"""

__version__ = "0.1.0"
