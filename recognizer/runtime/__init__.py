"""What the product runs on: storage (local folders and ``s3://``, :mod:`.storage`) and
the Ray session (:mod:`.ray_session`, the only module here that imports Ray)."""
