"""The lab around campaigns: hosts shared by several controllers, and campaigns that run on a schedule.

    reservations.py   holds on shared hosts, kept on the hosts themselves, with heartbeats and a TTL; the
                      names of holdfile.py (a hold file), holds.py (the protocol on one host), guard.py (the
                      trial guard) and heartbeat.py (a campaign's holds on all its hosts)
    schedule.py       cron schedules of campaigns: dated instances, missed slots, systemd timer units

Sharing datasets with collaborators lives with the records: runner.records.share.
"""
