"""The shape a bare state_dict is taken to have when no option says otherwise.

pytorch/examples' defaults. They sit in a module of their own, free of torch, so that
`dcgan-export --help` shows them without loading torch; dcgan.export.sources applies them.
"""

STATE_DICT_DEFAULTS = {"nz": 100, "ngf": 64, "channels": 3, "image_size": 64}
SHAPE_FIELDS = tuple(STATE_DICT_DEFAULTS)
