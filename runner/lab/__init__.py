"""The lab around campaigns: hosts shared by several controllers, and campaigns that run on a schedule.

    reservations.py   holds on shared hosts, kept on the hosts themselves, with heartbeats and a TTL
    schedule.py       cron schedules of campaigns: dated instances, missed slots, systemd timer units

Sharing datasets with collaborators lives with the records: runner.records.share.
"""
