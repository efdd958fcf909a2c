"""The browser demo of ``dvlt-reconstruct --serve``: upload images or a video, choose K and
the backend, look at the reconstruction in 3D and download its ``.glb`` (viser, the
``viewers`` extra)."""
