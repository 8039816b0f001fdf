"""Training the compact cards' weights here: the from-scratch curriculum and the robust fine-tuning (`[train]`)."""
