"""Publishing to the Hugging Face Hub: `iiae push` (`push`); the card it writes is `iiae.models.card`."""
