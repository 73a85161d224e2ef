"""Offline semantic pipeline of SRA-CL: prompts -> LLM (optional) -> sentence encoder -> faiss top-k.

Heavy dependencies (sentence-transformers, faiss, openai) are imported only where they are used.
"""
