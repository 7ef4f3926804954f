"""Ready model adapters: Hugging Face causal LMs and encoder-decoders, fairseq plugin models.

Import the module you need (`huggingface`, `huggingface_seq2seq` or `fairseq`): each is imported
on demand, so the core never imports a framework.
"""
