"""Quality of a DCGAN as numbers: FID, KID, precision/recall and the discriminator probe."""
