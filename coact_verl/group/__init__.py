"""The group step, verl-free: label the n responses of a prompt once (:mod:`.labeler`), after they have
gathered at one barrier (:mod:`.gather`)."""
