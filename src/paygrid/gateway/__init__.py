"""Channel gateway, inbound side: the endpoint channels send their callbacks (回调) to."""
