"""Merchant notifications (商户通知): signed POSTs to notify_url with a retry schedule."""
