"""Files a person opens in a viewer: a glTF scene (``.glb``, any glTF viewer or browser) and a
rerun recording (``.rrd``, ``rerun recording.rrd``), each from a whole reconstruction."""
