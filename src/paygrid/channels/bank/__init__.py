"""The bank (银行) that holds the institution's reserve account (备付金): its MT940 statement,
and its sandbox, into which the channel sandboxes settle."""

SANDBOX_MODULE = "paygrid.channels.bank.sandbox"

BANK = "bank"  # as recon's commands name it (``--channel bank``) and recon_bills stores it
STATEMENT_READY_AFTER_S = 6 * 3600  # the statement of D is out by 06:00 on D+1 (MODELLED)
