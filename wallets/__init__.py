"""Patient wallet: keys, consent signatures and sign-in."""
