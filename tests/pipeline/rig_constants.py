"""The times and network size the pipeline tests' synthetic rig is registered at."""

RIG_TIMES = (0.0, 0.4, 0.8, 1.2, 1.6)
RIG_IMG_SIZE = 112
