"""EVE, the encoder-free vision-language model (baaivision/EVE, EVEv1), trained in three stages."""
