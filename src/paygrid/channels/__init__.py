"""Channel gateway (通道/渠道): one folder per channel behind one interface (ports.py)."""
