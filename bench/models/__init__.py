"""Stage 2, subject models: the classifier interface, the small CNN zoo, pretrained and fine-tuned models, randomisation."""
