"""The learned field reader: one network reads a whole field, wherever the number sits
in the crop.

* :mod:`.codec`: the alphabet (digits and ``. , - / =``), CTC targets, greedy decoding;
* :mod:`.model`: the network: a localizer, then a convolutional reader with a CTC head;
* :mod:`.field_input`: image -> the network's canvas, shared by training, serving, jobs;
* :mod:`.read`: fields in, :class:`~recognizer.results.FieldResult` out.
"""
