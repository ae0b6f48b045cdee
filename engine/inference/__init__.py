"""A trained model on users' files: `iiae translate`, `iiae embed`, `iiae retrieve` (`search`), and what they share
to read inputs and keep outputs off them (`image_files`)."""
