"""recbole_sracl models; look them up by name with :func:`recbole_sracl.utils.get_model`."""
