"""Training the digit model and its splitter of touching digits.

* :mod:`.config`: the recipe (:class:`~.config.TrainConfig`);
* :mod:`.prepare`: the run's inputs (training digits, field pieces, the splitter);
* :mod:`.loop`: the one training loop, :func:`~.loop.fit`;
* :mod:`.checkpoints`: the one checkpoint writer and meta builder;
* :mod:`.ray_train` (Ray Train, N workers) and :mod:`.local` (this process, one
  worker): the two ways to run the loop;
* :mod:`.optim`, :mod:`.augment`: pieces of the loop; :mod:`.field_pieces` and
  :mod:`.splitter`: the training data of field reading;
* :mod:`.evaluate`, :mod:`.report`: scoring a checkpoint; :mod:`.cli`: ``digits train``
  and ``digits evaluate``.
"""
